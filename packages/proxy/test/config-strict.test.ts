// Issue 10 item 7: config files and ports are parsed strictly (alias bombs, non-decimal numbers,
// allowlist addresses and keys, duplicate names, a policy on a non-TCP dial).
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { awsAllowlistSchema, parseConfig, routeSchema } from '../src/config.js';
import { createRoute, ProxyError, parseEndpoint, strictPort } from '../src/index.js';

function issuesOf(
  fn: () => unknown,
): Array<{ path: string; line: number; col: number; message: string }> {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProxyError && e.code === 'ERR_CONFIG_INVALID') {
      return e.details?.issues as Array<{
        path: string;
        line: number;
        col: number;
        message: string;
      }>;
    }
    throw e;
  }
  throw new Error('no error');
}

describe('strictPort (the one port parser)', () => {
  it.each([
    ['443', 443],
    ['0', 0],
    ['65535', 65535],
    [8080, 8080],
  ])('reads %j as %d', (v, n) => expect(strictPort(v)).toBe(n));

  it.each([
    '1e3',
    '0x50',
    '0o120',
    '0b1',
    '+80',
    '-1',
    ' ',
    '',
    ' 80',
    '80 ',
    '8.0',
    '65536',
    '١٢',
    80.5,
    -1,
    Number.NaN,
    null,
    undefined,
    {},
  ])('refuses %j', (v) => expect(strictPort(v)).toBeUndefined());

  it('honours min and max', () => {
    expect(strictPort('0', 65535, 1)).toBeUndefined();
    expect(strictPort('4294967295', 0xffffffff)).toBe(0xffffffff);
    expect(strictPort('4294967296', 0xffffffff)).toBeUndefined();
  });

  it('endpoints use it', () => {
    expect(() => parseEndpoint('tcp:127.0.0.1:0x50')).toThrow(/not a decimal number/);
    expect(() => parseEndpoint('tcp:127.0.0.1:1e3')).toThrow(/not a decimal number/);
    expect(() => parseEndpoint('tcp:127.0.0.1:')).toThrow(ProxyError);
    expect(() => parseEndpoint('vsock:3: 80')).toThrow(ProxyError);
  });
});

describe('parseConfig', () => {
  const schema = z.strictObject({
    n: z.number().optional(),
    s: z.string().optional(),
    l: z.array(z.unknown()).optional(),
  });

  it('refuses a billion-laughs document with ERR_CONFIG_INVALID at the first alias', () => {
    const bomb = [
      'a: &a [x, x, x, x, x, x, x, x, x, x]',
      'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]',
      'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
      'd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]',
      'l: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]',
    ].join('\n');
    const issues = issuesOf(() => parseConfig(bomb, z.unknown(), 'bomb.yaml'));
    expect(issues).toEqual([
      expect.objectContaining({
        path: '(yaml)',
        line: 2,
        col: 8,
        message: expect.stringMatching(/alias/),
      }),
    ]);
  });

  it('still accepts a few aliases', () => {
    expect(
      parseConfig('a: &a [1, 2]\nl: [*a, *a]\n', z.object({ l: z.array(z.array(z.number())) })),
    ).toEqual({
      l: [
        [1, 2],
        [1, 2],
      ],
    });
  });

  it.each(['0x50', '0o120', '1e3', '.inf', '-.inf', '.nan'])(
    'keeps %s a string (numbers are decimal)',
    (spelled) => {
      expect(parseConfig(`s: ${spelled}\n`, schema)).toEqual({ s: spelled });
      const issues = issuesOf(() => parseConfig(`n: ${spelled}\n`, schema, 'f.yaml'));
      expect(issues[0]).toMatchObject({ path: 'n', line: 1, col: 4 });
    },
  );

  it('reads decimal integers and floats', () => {
    expect(parseConfig('n: 1000\n', schema)).toEqual({ n: 1000 });
    expect(parseConfig('n: 1.5\n', schema)).toEqual({ n: 1.5 });
    expect(parseConfig('n: -2\n', schema)).toEqual({ n: -2 });
  });
});

describe('awsAllowlistSchema', () => {
  it('accepts AWS sample entries', () => {
    expect(
      parseConfig(
        'allowlist:\n- {address: kms.us-east-1.amazonaws.com, port: 443}\n- {address: 10.0.0.0/8, port: 8443}\n',
        awsAllowlistSchema,
      ),
    ).toEqual({
      allowlist: [
        { address: 'kms.us-east-1.amazonaws.com', port: 443 },
        { address: '10.0.0.0/8', port: 8443 },
      ],
    });
  });

  it.each(['host:443', '10.0.0.0/33', '1.2.3.4/8/8', 'a b', '[::1]:443'])(
    'refuses the address %j',
    (address) => {
      const issues = issuesOf(() =>
        parseConfig(
          `allowlist:\n- {address: "${address}", port: 443}\n`,
          awsAllowlistSchema,
          'a.yaml',
        ),
      );
      expect(issues[0]).toMatchObject({ path: 'allowlist[0].address', line: 2, col: 13 });
    },
  );

  it('refuses unknown keys at both levels', () => {
    expect(
      issuesOf(() => parseConfig('allowlist: []\nextra: 1\n', awsAllowlistSchema)).map(
        (i) => i.path,
      ),
    ).toEqual(['extra']);
    expect(
      issuesOf(() =>
        parseConfig('allowlist:\n- {address: a.com, port: 443, ports: 1}\n', awsAllowlistSchema),
      ).map((i) => i.path),
    ).toEqual(['allowlist[0].ports']);
  });

  it.each(['0x1bb', '1e3', "' '", "''", '0', '65536', '-443'])('refuses the port %s', (spelled) => {
    const issues = issuesOf(() =>
      parseConfig(`allowlist:\n- {address: a.com, port: ${spelled}}\n`, awsAllowlistSchema),
    );
    expect(issues[0]?.path).toBe('allowlist[0].port');
  });
});

describe('names and policies', () => {
  it.each(['unix:/tmp/x.sock', 'vsock:16:5000'])(
    'refuses a policy on a route dialling %s',
    (dial) => {
      const issues = issuesOf(() =>
        parseConfig(
          `name: r\nlisten: tcp:127.0.0.1:0\ndial: ${dial}\npolicy: {allow: ["*:443"]}\n`,
          routeSchema,
        ),
      );
      expect(issues).toEqual([expect.objectContaining({ path: 'policy', line: 4 })]);
      expect(() =>
        createRoute({ name: 'r', listen: 'tcp:127.0.0.1:0', dial, policy: { allow: ['*:443'] } }),
      ).toThrow(/policy applies to tcp: dial targets only/);
    },
  );

  it('accepts a policy on a tcp: dial', () => {
    expect(
      parseConfig(
        'name: r\nlisten: vsock:any:1\ndial: tcp:a.com:443\npolicy: {allow: ["a.com:443"]}\n',
        routeSchema,
      ).policy,
    ).toBeDefined();
  });
});
