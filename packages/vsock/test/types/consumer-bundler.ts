// Type test (tsc only, never run): the README's uses of vsockDialer under bundler resolution.
import http from 'node:http';
import { CID_PARENT, vsockDialer } from '@enclave-extras/vsock';
import { Agent, request } from 'undici';

const dialer = vsockDialer({ cid: CID_PARENT, port: 8080 });
http.get({ host: 'parent', path: '/', createConnection: dialer }, (res) => res.resume());
const agent = new Agent({ connect: dialer });
export async function get(): Promise<string> {
  const { body } = await request('http://parent/', { dispatcher: agent });
  return body.text();
}
export const dial = () => dialer.dial();
