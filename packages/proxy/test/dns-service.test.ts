import net from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  buildDnsResponse,
  createDnsService,
  createResolver,
  DnsRcode,
  type LookupFunction,
  Policy,
  parseDnsQuery,
  parseDnsResponse,
} from '../src/index.js';
import { tempDir } from './helpers.js';

function query(name: string, type: number, id = 7): Buffer {
  const labels = name
    .split('.')
    .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2);
  head.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([head, ...labels, Buffer.from([0]), tail]);
}

/** Sends framed questions on one stream connection and reads as many framed answers. */
function ask(path: string, msgs: Buffer[]): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path, () => {
      for (const m of msgs) {
        const h = Buffer.alloc(2);
        h.writeUInt16BE(m.length, 0);
        s.write(Buffer.concat([h, m]));
      }
    });
    let buf = Buffer.alloc(0);
    const out: Buffer[] = [];
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        out.push(Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0))));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (out.length === msgs.length) {
        s.end();
        resolve(out);
      }
    });
    s.on('error', reject);
  });
}

describe('DNS messages', () => {
  it('parses a question and builds A/AAAA answers that parse back', () => {
    const q = parseDnsQuery(query('Api.Example.TEST', 1, 99));
    expect(q).toMatchObject({ id: 99, name: 'api.example.test', type: 1, qclass: 1, rd: true });
    if (!q) throw new Error('no question');
    const a = buildDnsResponse(q, {
      rcode: 0,
      ttlSeconds: 42,
      records: [
        { address: '10.0.0.1', family: 4 },
        { address: '2001:db8::1', family: 6 },
        { address: '10.0.0.2', family: 4 },
      ],
    });
    expect(parseDnsResponse(a)).toEqual({
      id: 99,
      rcode: 0,
      minTtl: 42,
      records: [
        { address: '10.0.0.1', family: 4 },
        { address: '10.0.0.2', family: 4 },
      ],
    });
    const q6 = parseDnsQuery(query('x.test', 28));
    if (!q6) throw new Error('no question');
    const a6 = buildDnsResponse(q6, {
      rcode: 0,
      ttlSeconds: 5,
      records: [{ address: '2001:db8::1', family: 6 }],
    });
    expect(parseDnsResponse(a6)?.records).toEqual([{ address: '2001:db8::1', family: 6 }]);
  });

  it('refuses malformed input: responses, no question, a compression loop', () => {
    const resp = query('a.test', 1);
    resp.writeUInt16BE(0x8100, 2);
    expect(parseDnsQuery(resp)).toBeUndefined();
    expect(parseDnsQuery(Buffer.alloc(11))).toBeUndefined();
    const loop = Buffer.alloc(18);
    loop.writeUInt16BE(1, 4);
    loop.writeUInt16BE(0xc00c, 12); // points at itself
    expect(parseDnsQuery(loop)).toBeUndefined();
  });
});

describe('Policy.precheckName (what a DNS query may resolve)', () => {
  it('lets through names some allow rule could allow on any port, refuses the rest', () => {
    const p = new Policy({
      allow: ['*.amazonaws.com:443', 'db.internal:5432', '10.0.0.0/8:5432'],
      deny: ['bad.amazonaws.com', 'partly.amazonaws.com:443'],
    });
    expect(p.precheckName('kms.eu-west-1.amazonaws.com')).toBeUndefined();
    expect(p.precheckName('DB.Internal.')).toBeUndefined();
    // denied on every port
    expect(p.precheckName('bad.amazonaws.com')).toMatchObject({ allowed: false });
    // a deny for one port only does not stop resolution (another port may be allowed)
    expect(p.precheckName('partly.amazonaws.com')).toBeUndefined();
    // CIDR rules do not let names through (no DNS channel), unless they allow names
    expect(p.precheckName('anything.example')).toMatchObject({ allowed: false });
    expect(p.precheckName('1.2.3.4')).toMatchObject({ allowed: false });
    const aws = Policy.fromAwsAllowlist({ allowlist: [{ address: '10.0.0.0/8', port: 443 }] });
    expect(aws.precheckName('anything.example')).toBeUndefined();
  });
});

describe('createDnsService (parent side)', () => {
  const t = tempDir('ee-dns-service-');
  afterAll(() => t.cleanup());

  it('answers allowed names with the resolver TTL, REFUSED without resolving for names the policy never allows, NXDOMAIN for missing ones', async () => {
    const asked: string[] = [];
    const lookup: LookupFunction = async (host) => {
      asked.push(host);
      if (host === 'db.internal') {
        return {
          addresses: [
            { address: '10.1.2.3', family: 4 },
            { address: 'fd00::3', family: 6 },
          ],
          ttlMs: 20_000,
        };
      }
      throw Object.assign(new Error(`queryA ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    };
    const path = join(t.dir, 'dns.sock');
    const svc = createDnsService({
      listen: `unix:${path}`,
      policy: { allow: ['db.internal:5432', 'gone.internal:5432', '10.0.0.0/8:22'] },
      resolver: createResolver({ lookup }),
    });
    await svc.start();
    try {
      const [a, aaaa, refused, gone, mx] = await ask(path, [
        query('db.internal', 1, 1),
        query('db.internal', 28, 2),
        query('secret-data.attacker.example', 1, 3),
        query('gone.internal', 1, 4),
        query('db.internal', 15, 5),
      ]);
      const pa = parseDnsResponse(a as Buffer);
      expect(pa).toMatchObject({ id: 1, rcode: 0, records: [{ address: '10.1.2.3' }] });
      expect(pa?.minTtl).toBeGreaterThan(0);
      expect(pa?.minTtl).toBeLessThanOrEqual(20);
      expect(parseDnsResponse(aaaa as Buffer)).toMatchObject({
        id: 2,
        rcode: 0,
        records: [{ address: 'fd00::3', family: 6 }],
      });
      expect(parseDnsResponse(refused as Buffer)).toMatchObject({
        id: 3,
        rcode: DnsRcode.REFUSED,
        records: [],
      });
      expect(parseDnsResponse(gone as Buffer)).toMatchObject({ id: 4, rcode: DnsRcode.NXDOMAIN });
      expect(parseDnsResponse(mx as Buffer)).toMatchObject({ id: 5, rcode: DnsRcode.NOTIMP });
      // the refused name never reached the resolver; db.internal was looked up once (cached)
      expect(asked).toEqual(['db.internal', 'gone.internal']);
      expect(svc.stats()).toMatchObject({
        queries: 5,
        answered: 2,
        refused: 1,
        nxdomain: 1,
        notimp: 1,
      });
      expect(svc.metricsText()).toContain('ee_dns_queries_total{result="refused"} 1');
      // a reload that drops the rule: the name is refused from then on
      svc.setPolicy({ allow: ['other.internal:1'] });
      const [after] = await ask(path, [query('db.internal', 1, 6)]);
      expect(parseDnsResponse(after as Buffer)?.rcode).toBe(DnsRcode.REFUSED);
    } finally {
      await svc.close();
    }
  });
});
