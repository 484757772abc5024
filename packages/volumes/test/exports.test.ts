import { describe, expect, it } from 'vitest';
import { checkExports, nfsExportLine, parseExports } from '../src/index.js';

describe('parent-side exports', () => {
  it('prints the exact exports line for the proxy', () => {
    expect(nfsExportLine({ dir: '/srv/enclave' })).toBe(
      '/srv/enclave 127.0.0.1(rw,sync,insecure,no_root_squash,no_subtree_check,fsid=0)',
    );
    expect(
      nfsExportLine({ dir: '/srv/my vol', proxyAddress: '127.0.0.5', pseudoRoot: false }),
    ).toBe('"/srv/my vol" 127.0.0.5(rw,sync,insecure,no_root_squash,no_subtree_check)');
  });

  it('parses comments, continuations, quoted paths, default options and bare hosts', () => {
    const e = parseExports(
      '# c\n/srv/a 127.0.0.1(rw,sync) 10.0.0.0/8(ro)\n"/srv/b c" -rw,sync \\\n  host1 host2(ro)\n/srv/d\n',
    );
    expect(e).toEqual([
      {
        dir: '/srv/a',
        line: 2,
        clients: [
          { host: '127.0.0.1', options: ['rw', 'sync'] },
          { host: '10.0.0.0/8', options: ['ro'] },
        ],
      },
      {
        dir: '/srv/b c',
        line: 3,
        clients: [
          { host: 'host1', options: ['rw', 'sync'] },
          { host: 'host2', options: ['ro'] },
        ],
      },
      { dir: '/srv/d', line: 4, clients: [{ host: '*', options: [] }] },
    ]);
  });

  it('is clean for exactly the printed line', () => {
    expect(
      checkExports(`${nfsExportLine({ dir: '/srv/enclave' })}\n`, { dir: '/srv/enclave' }),
    ).toEqual([]);
  });

  it('errors when the export is reachable from more than the proxy, or missing', () => {
    const wide = checkExports('/srv/enclave 127.0.0.1(rw,sync,insecure) *(rw)\n', {
      dir: '/srv/enclave',
    });
    expect(wide).toHaveLength(1);
    expect(wide[0]).toMatchObject({ level: 'error' });
    expect(wide[0]?.message).toMatch(/exported to "\*" as well as to the proxy/);
    const parent = checkExports('/srv 10.0.0.0/8(rw)\n/srv/enclave 127.0.0.1(rw,sync,insecure)\n', {
      dir: '/srv/enclave',
    });
    expect(parent.map((f) => f.message).join()).toMatch(
      /\/srv \(which contains \/srv\/enclave\) is exported to 10.0.0.0\/8/,
    );
    expect(checkExports('/other 127.0.0.1(rw)\n', { dir: '/srv/enclave' })[0]?.message).toMatch(
      /not in the exports file/,
    );
  });

  it('warns about options that break the volume', () => {
    const f = checkExports('/srv/enclave 127.0.0.1(ro)\n', { dir: '/srv/enclave' }).map(
      (x) => x.message,
    );
    expect(f.join('\n')).toMatch(/no "sync"/);
    expect(f.join('\n')).toMatch(/no "insecure"/);
    expect(f.join('\n')).toMatch(/"ro"/);
  });
});
