// The enclave app of the example: an HTTPS call to "KMS" by its real name, as the AWS SDK would make.
// It knows nothing about vsock: /etc/hosts sends the name to 127.0.0.2, where ee-enclave listens.
import https from 'node:https';

const body = JSON.stringify({ KeyId: 'alias/example', Plaintext: 'aGVsbG8=' });
const req = https.request(
  {
    host: 'kms.us-east-1.amazonaws.com',
    port: 443,
    method: 'POST',
    path: '/',
    headers: {
      'content-type': 'application/x-amz-json-1.1',
      'x-amz-target': 'TrentService.Encrypt',
      'content-length': Buffer.byteLength(body),
    },
  },
  (res) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d) => {
      text += d;
    });
    res.on('end', () => {
      console.log(JSON.stringify({ status: res.statusCode, body: JSON.parse(text) }));
      process.exit(res.statusCode === 200 ? 0 : 1);
    });
  },
);
req.on('error', (err) => {
  console.error(`app: ${err.code ?? ''} ${err.message}`);
  process.exit(3);
});
req.end(body);
