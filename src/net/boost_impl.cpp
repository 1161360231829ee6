// The only translation unit that compiles Asio's and Beast's implementation (separate
// compilation, BOOST_*_SEPARATE_COMPILATION is set for every target): each other TU only
// instantiates the templates it uses.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
