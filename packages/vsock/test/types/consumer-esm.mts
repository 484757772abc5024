// Type test (tsc only, never run): the README's uses of vsockDialer from an ES module.
import http from 'node:http';
import type { Socket } from 'node:net';
import { CID_PARENT, type VsockDialer, type VsockSocket, vsockDialer } from '@enclave-extras/vsock';
import { Agent, fetch, request } from 'undici';

const dialer: VsockDialer = vsockDialer({ cid: CID_PARENT, port: 8080 });

// node:http: a request's createConnection, and an Agent's
http.get({ host: 'parent', path: '/', createConnection: dialer }, (res) => res.resume());
http.request({ host: 'parent', path: '/', method: 'POST', createConnection: dialer }).end('x');
class VsockAgent extends http.Agent {
  override createConnection = dialer;
}
http.get({ host: 'parent', path: '/', agent: new VsockAgent({ keepAlive: true }) });
const fromHttp: Socket = dialer({ protocol: null, hostname: 'parent' });

// undici 7: new Agent({ connect }) with request and fetch; https origins get TLS over vsock
const agent = new Agent({ connect: dialer });
const { body } = await request('http://parent/', { dispatcher: agent });
await body.text();
await fetch('https://parent/', {
  dispatcher: new Agent({ connect: vsockDialer({ cid: 3, port: 8443, tls: { ca: 'PEM' } }) }),
});

// the toolkit's Dialer seam
const socket: VsockSocket = await dialer.dial({ signal: AbortSignal.timeout(1000) });
const cid: number | undefined = socket.remoteCid;

export { cid, fromHttp };
