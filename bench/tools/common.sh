# Shell functions bench/run.sh and bench/instructions.sh share (sourced; needs BENCH_DIR).

free_ports() { # N: N distinct free TCP ports on 127.0.0.1
  node -e '
    const net = require("net"); const n = +process.argv[1]; const open = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      s.listen(0, "127.0.0.1", () => {
        open.push(s);
        if (open.length === n) { console.log(open.map((x) => x.address().port).join(" ")); open.forEach((x) => x.close()); }
      });
    }' "$1"
}

# render_nginx_confs DIR UP_PORT PROXY_PORT PACED_PORT PACED_PROXY_PORT AZURE_KEY: DIR/upstream.conf
# (nginx answering the fixed Azure bodies) and DIR/proxy.conf (nginx doing the gateway's rewrite).
render_nginx_confs() {
  local dir=$1 up=$2 proxy=$3 paced=$4 paced_proxy=$5 key=$6
  node "$BENCH_DIR/tools/render.mjs" "$BENCH_DIR/conf/nginx-upstream.conf.in" "$dir/upstream.conf" \
    PREFIX="$dir" UPSTREAM_PORT="$up" \
    CHAT_RESPONSE="nginxbody:$BENCH_DIR/data/azure-chat-response.json" \
    EMBEDDINGS_RESPONSE="nginxbody:$BENCH_DIR/data/azure-embeddings-response.json" \
    CHAT_SSE="nginxbody:$BENCH_DIR/data/azure-chat-stream.sse"
  node "$BENCH_DIR/tools/render.mjs" "$BENCH_DIR/conf/nginx-proxy.conf.in" "$dir/proxy.conf" \
    PREFIX="$dir" UPSTREAM_PORT="$up" PROXY_PORT="$proxy" AZURE_KEY="$key" \
    PACED_PORT="$paced" PACED_PROXY_PORT="$paced_proxy"
}
