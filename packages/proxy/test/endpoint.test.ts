import { describe, expect, it } from 'vitest';
import { describeEndpoint, formatEndpoint, ProxyError, parseEndpoint } from '../src/index.js';

describe('parseEndpoint', () => {
  it('parses the three kinds', () => {
    expect(parseEndpoint('tcp:127.0.0.1:443')).toEqual({
      kind: 'tcp',
      host: '127.0.0.1',
      port: 443,
    });
    expect(parseEndpoint('tcp:[::1]:443')).toEqual({ kind: 'tcp', host: '::1', port: 443 });
    expect(parseEndpoint('tcp:kms.eu-west-1.amazonaws.com:443')).toEqual({
      kind: 'tcp',
      host: 'kms.eu-west-1.amazonaws.com',
      port: 443,
    });
    expect(parseEndpoint('vsock:16:5000')).toEqual({ kind: 'vsock', cid: 16, port: 5000 });
    expect(parseEndpoint('vsock:any:8000')).toEqual({ kind: 'vsock', cid: 0xffffffff, port: 8000 });
    expect(parseEndpoint('vsock:parent:8000')).toEqual({ kind: 'vsock', cid: 3, port: 8000 });
    expect(parseEndpoint('unix:/tmp/a.sock')).toEqual({ kind: 'unix', path: '/tmp/a.sock' });
  });

  it('round-trips and describes', () => {
    for (const s of [
      'tcp:127.0.0.1:443',
      'tcp:[::1]:443',
      'vsock:16:5000',
      'vsock:any:1',
      'unix:/x',
    ]) {
      expect(formatEndpoint(parseEndpoint(s))).toBe(s);
    }
    expect(describeEndpoint(parseEndpoint('tcp:[::1]:443'))).toBe('[::1]:443');
    expect(describeEndpoint(parseEndpoint('vsock:16:5000'))).toBe('vm(16):5000');
    expect(describeEndpoint(parseEndpoint('unix:/p'))).toBe('unix:/p');
  });

  it.each([
    ['127.0.0.1:443', 'scheme'],
    ['tcp:127.0.0.1', 'PORT'],
    ['tcp:127.0.0.1:70000', 'out of range'],
    ['tcp:::1:443', 'brackets'],
    ['tcp:[::1:443', 'not closed'],
    ['tcp:[nothex]:443', 'IPv6'],
    ['tcp:bad host:1', 'neither'],
    ['vsock:16', 'vsock:CID:PORT'],
    ['vsock:x:1', 'CID'],
    ['unix:', 'empty'],
    ['udp:1.2.3.4:5', 'unknown scheme'],
  ])('rejects %s with a clear error', (input, words) => {
    let err: unknown;
    try {
      parseEndpoint(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ProxyError);
    const e = err as ProxyError;
    expect(e.code).toBe('ERR_PROXY_BAD_ENDPOINT');
    expect(e.message).toContain(input);
    expect(e.message).toContain(words);
  });
});
