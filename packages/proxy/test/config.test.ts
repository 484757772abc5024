import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  awsAllowlistSchema,
  egressGatewayServerSchema,
  loadConfigFile,
  parseConfig,
  routeSchema,
} from '../src/config.js';
import { Policy, ProxyError } from '../src/index.js';
import { tempDir } from './helpers.js';

const appSchema = z.strictObject({
  routes: z.array(routeSchema).default([]),
  gateway: egressGatewayServerSchema.optional(),
});

function configError(fn: () => unknown): ProxyError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProxyError) return e;
    throw e;
  }
  throw new Error('no error');
}

describe('parseConfig', () => {
  it('parses a valid config into endpoints and policies', () => {
    const cfg = parseConfig(
      [
        'routes:',
        '  - name: kms',
        '    listen: vsock:any:8000',
        '    dial: tcp:kms.eu-west-1.amazonaws.com:443',
        '    dialRetries: { attempts: 3, delayMs: 100, backoff: 2 }',
        '    backlog: 4096',
        'gateway:',
        '  listen: vsock:any:8001',
        '  policy:',
        '    allow: ["*.amazonaws.com:443", {address: 10.0.0.0/8, port: "1000-2000"}]',
        '    deny: [169.254.169.254]',
      ].join('\n'),
      appSchema,
      'parent.yaml',
    );
    expect(cfg.routes[0]?.listen).toEqual({ kind: 'vsock', cid: 0xffffffff, port: 8000 });
    expect(cfg.routes[0]?.dial).toEqual({
      kind: 'tcp',
      host: 'kms.eu-west-1.amazonaws.com',
      port: 443,
    });
    expect(cfg.routes[0]?.backlog).toBe(4096);
    expect(cfg.gateway?.name).toBe('egress');
    const p = new Policy(cfg.gateway!.policy);
    expect(p.check('kms.eu-west-1.amazonaws.com', 443, ['52.1.1.1']).allowed).toBe(true);
    expect(p.check('169.254.169.254', 443, ['169.254.169.254']).allowed).toBe(false);
  });

  it('names the key path and file:line:col of each problem', () => {
    const text = [
      'routes:', //             1
      '  - name: kms', //       2
      '    listen: tcp:1.2.3.4', // 3 (no port)
      '    dial: tcp:a:1', //   4
      '    maxConections: 5', // 5 (typo)
      '  - name: other', //     6
      '    dial: unix:/x', //   7 (listen missing)
    ].join('\n');
    const e = configError(() => parseConfig(text, appSchema, 'parent.yaml'));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toContain(
      'parent.yaml:3:13: routes[0].listen: Endpoint "tcp:1.2.3.4" is invalid',
    );
    expect(e.message).toContain('parent.yaml:5:5: routes[0].maxConections: unknown key');
    expect(e.message).toMatch(/parent\.yaml:6:5: routes\[1\]\.listen: required key is missing/);
    const issues = (e.details as { issues: Array<{ path: string }> }).issues;
    expect(issues.map((i) => i.path).sort()).toEqual([
      'routes[0].listen',
      'routes[0].maxConections',
      'routes[1].listen',
    ]);
  });

  it('reports bad policy rules and YAML syntax errors with positions', () => {
    const e = configError(() =>
      parseConfig(
        'gateway:\n  listen: vsock:any:1\n  policy:\n    allow: ["a.com:99999"]\n',
        appSchema,
        'p.yaml',
      ),
    );
    expect(e.message).toContain('p.yaml:4:13: gateway.policy.allow[0]:');
    expect(e.message).toContain('outside 1-65535');
    const y = configError(() => parseConfig('routes: [\n  - a\n', appSchema, 'broken.yaml'));
    expect(y.code).toBe('ERR_CONFIG_INVALID');
    expect(y.message).toMatch(/broken\.yaml:\d+:\d+: \(yaml\)/);
  });

  it('accepts the AWS sample vsock-proxy.yaml unchanged', () => {
    const aws = `allowlist:
- {address: kms.us-east-1.amazonaws.com, port: 443}
- {address: kms-fips.us-east-1.amazonaws.com, port: 443}
- {address: kms.eu-west-1.amazonaws.com, port: 443}
`;
    const cfg = parseConfig(aws, awsAllowlistSchema, 'vsock-proxy.yaml');
    const p = Policy.fromAwsAllowlist(cfg);
    expect(p.check('kms.eu-west-1.amazonaws.com', 443, ['3.3.3.3']).allowed).toBe(true);
  });

  it('loadConfigFile reads files and reports unreadable ones', async () => {
    const t = tempDir();
    try {
      const f = join(t.dir, 'c.yaml');
      writeFileSync(f, 'routes: []\n');
      expect(await loadConfigFile(f, appSchema)).toEqual({ routes: [] });
      await expect(loadConfigFile(join(t.dir, 'nope.yaml'), appSchema)).rejects.toMatchObject({
        code: 'ERR_CONFIG_READ',
        message: expect.stringContaining('nope.yaml'),
      });
    } finally {
      t.cleanup();
    }
  });
});
