// A KMS-like TLS server for the example: answers TrentService JSON calls with a fixed shape.
// Usage: node kms-like-server.mjs CERT.pem KEY.pem [port=18443] [host=127.0.0.1]
import { readFileSync } from 'node:fs';
import https from 'node:https';

const [cert, key, port = '18443', host = '127.0.0.1'] = process.argv.slice(2);
if (!cert || !key) {
  console.error('usage: node kms-like-server.mjs CERT.pem KEY.pem [port] [host]');
  process.exit(2);
}
const server = https.createServer(
  { cert: readFileSync(cert), key: readFileSync(key) },
  (req, res) => {
    let body = '';
    req.on('data', (d) => {
      body += d;
    });
    req.on('end', () => {
      const target = String(req.headers['x-amz-target'] ?? '');
      const input = body ? JSON.parse(body) : {};
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(
        JSON.stringify({
          target,
          KeyId: input.KeyId ?? null,
          servername: req.socket.servername ?? null,
        }),
      );
    });
  },
);
server.listen({ host, port: Number(port) }, () =>
  console.log(`kms-like listening on ${host}:${port}`),
);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
