// Type test (tsc only, never run): the README's uses of vsockDialer from a CommonJS module.
import http = require('node:http');

import type { Socket } from 'node:net';

import vsock = require('@enclave-extras/vsock');
import undici = require('undici');

const dialer: vsock.VsockDialer = vsock.vsockDialer({ cid: vsock.CID_PARENT, port: 8080 });

http.get({ host: 'parent', path: '/', createConnection: dialer }, (res) => res.resume());
class VsockAgent extends http.Agent {
  override createConnection = dialer;
}
http.get({ host: 'parent', path: '/', agent: new VsockAgent() });
const fromHttp: Socket = dialer({ protocol: null, hostname: 'parent' });

async function main(): Promise<number | undefined> {
  const agent = new undici.Agent({ connect: dialer });
  const { body } = await undici.request('http://parent/', { dispatcher: agent });
  await body.text();
  const socket: vsock.VsockSocket = await dialer.dial();
  return socket.remoteCid;
}
export = { main, fromHttp };
