#!/usr/bin/env node
// Renders a bench template: every @NAME@ is replaced by a value given on the command line.
//   node render.mjs TEMPLATE OUT NAME=value NAME=nginxbody:FILE ...
// `nginxbody:FILE` is for serving FILE's bytes with `return 200 @NAME@;`. nginx reads at most
// 4 KiB per configuration token, so the body is cut into pieces, each escaped for a single-quoted
// nginx string and put into its own variable: @NAME_SET@ becomes the `set $bench_name_N '...';`
// lines (place them in the same location), @NAME@ becomes "$bench_name_0$bench_name_1...". A body
// of at most 2000 bytes is one constant string and @NAME_SET@ is empty.
// nginx would expand `$name` inside such a string, so a body containing '$' is refused.
import { readFileSync, writeFileSync } from 'node:fs';

const [template, out, ...pairs] = process.argv.slice(2);
if (!template || !out) {
  console.error('usage: render.mjs TEMPLATE OUT NAME=value|NAME=nginxstr:FILE ...');
  process.exit(2);
}
const values = new Map();
for (const p of pairs) {
  const eq = p.indexOf('=');
  if (eq <= 0) throw new Error(`bad pair ${p}`);
  const name = p.slice(0, eq);
  const value = p.slice(eq + 1);
  if (value.startsWith('nginxbody:')) {
    const file = value.slice('nginxbody:'.length);
    const body = readFileSync(file, 'utf8');
    if (body.includes('$')) throw new Error(`${file} contains '$', which nginx would expand`);
    const escape = (t) => t.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n').replace(/\r/g, '\\r');
    const vars = [];
    const sets = [];
    if (body.length <= 2000) {
      values.set(name, `'${escape(body)}'`);  // one token is enough: a constant, no variables
      values.set(`${name}_SET`, '');
      continue;
    }
    for (let i = 0, n = 0; i < body.length; i += 2000, n++) {
      const v = `$bench_${name.toLowerCase()}_${n}`;
      vars.push(v);
      sets.push(`set ${v} '${escape(body.slice(i, i + 2000))}';`);
    }
    values.set(name, `"${vars.join('')}"`);
    values.set(`${name}_SET`, sets.join('\n      '));
  } else {
    values.set(name, value);
  }
}
const text = readFileSync(template, 'utf8').replace(/@([A-Z0-9_]+)@/g, (m, name) => {
  if (!values.has(name)) throw new Error(`${template}: no value for @${name}@`);
  return values.get(name);
});
writeFileSync(out, text);
