// A tiny static file server for the built page (dist/web) in tests and development.
//   node tests/e2e/serve.mjs [ROOT=dist/web] [PORT=8080]
// Serves .wasm as application/wasm (streaming compilation needs it), answers `Range:
// bytes=N-[M]` with 206 (a cut shard download resumes with one), and refuses paths that leave
// ROOT. For the tests, `server.served` counts the body bytes sent per path, and
// `server.cutOnce.set(path, n)` makes the next response for `path` send its first `n` body
// bytes and then drop the connection, as a network cut would.
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { resolve, join, extname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.svg': 'image/svg+xml',
};

// A model host is another origin to the page (as Hugging Face is): tests serve one, and a
// 404 must reach the page as a 404, not as a CORS failure.
const CORS = { 'Access-Control-Allow-Origin': '*' };

/** `bytes=N-` or `bytes=N-M` within `size`, as [start, end) or null. */
function parseRange(header, size) {
  const m = /^bytes=(\d+)-(\d*)$/.exec(header || '');
  if (!m) return null;
  const start = Number(m[1]);
  const end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
  return start < end ? [start, end] : null;
}

/** Start serving `root` on `port` (0: any free port); resolves to {server, url}. */
export function serve(root, port = 0) {
  const base = resolve(root);
  const served = new Map();
  const cutOnce = new Map();
  const server = createServer(async (req, res) => {
    try {
      const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
      let file = resolve(join(base, path));
      if (file !== base && !file.startsWith(base + sep)) {
        res.writeHead(403, CORS).end('forbidden');
        return;
      }
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const whole = await readFile(file);
      const headers = {
        'Content-Type': TYPES[extname(file)] || 'application/octet-stream',
        'Cache-Control': 'no-store',
        'Accept-Ranges': 'bytes',
        ...CORS,
      };
      let body = whole;
      const range = !server.ignoreRange && req.headers.range && parseRange(req.headers.range, whole.length);
      if (!server.ignoreRange && req.headers.range && !range) {
        res.writeHead(416, { ...CORS, 'Content-Range': `bytes */${whole.length}` }).end();
        return;
      }
      if (range) {
        body = whole.subarray(range[0], range[1]);
        headers['Content-Range'] = `bytes ${range[0]}-${range[1] - 1}/${whole.length}`;
      }
      headers['Content-Length'] = String(body.length);
      res.writeHead(range ? 206 : 200, headers);
      const cut = cutOnce.get(path);
      if (cut !== undefined && cut < body.length) {
        cutOnce.delete(path);
        served.set(path, (served.get(path) || 0) + cut);
        // Let the bytes reach the browser before the connection drops.
        res.write(body.subarray(0, cut), () => setTimeout(() => res.destroy(), 200));
        return;
      }
      served.set(path, (served.get(path) || 0) + body.length);
      res.end(body);
    } catch {
      res.writeHead(404, CORS).end('not found');
    }
  });
  server.served = served;
  server.cutOnce = cutOnce;
  return new Promise((ok) => {
    server.listen(port, '127.0.0.1', () => {
      ok({ server, url: `http://127.0.0.1:${server.address().port}/` });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [root = 'dist/web', port = '8080'] = process.argv.slice(2);
  const { url } = await serve(root, Number(port));
  console.log(`serving ${resolve(root)} at ${url}`);
}
