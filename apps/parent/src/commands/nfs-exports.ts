// ee-parent nfs-exports: the exact /etc/exports line that serves an enclave volume to the
// parent-side proxy only, and a check of the live exports file and NFS listeners against it.
// The logic lives in @enclave-extras/volumes (nfsExportLine, checkExports, checkNfsListeners).
import { readFile } from 'node:fs/promises';
import {
  checkExports,
  checkNfsListeners,
  type ExportFinding,
  listeningAddresses,
  nfsExportLine,
} from '@enclave-extras/volumes';
import type { Command } from 'commander';
import { exitWithError, intArg, UsageError } from '../common.js';

interface Flags {
  dir: string;
  proxyAddress: string;
  exports: string;
  pseudoRoot: boolean;
  port: string;
  check?: boolean;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export function register(program: Command): void {
  program
    .command('nfs-exports')
    .description(
      "Print the /etc/exports line that serves DIR to the enclave's NFS route (the parent-side proxy's address only), then check the exports file and the NFS server's listening addresses: an error when the export reaches more than the proxy, warnings for options that break the volume.",
    )
    .requiredOption('--dir <dir>', 'the directory to export to the enclave (absolute path)')
    .option(
      '--proxy-address <addr>',
      'the address the parent-side proxy connects to the NFS server from',
      '127.0.0.1',
    )
    .option('--exports <file>', 'the exports file to check', '/etc/exports')
    .option('--no-pseudo-root', 'do not add fsid=0 (the enclave then mounts DIR by its full path)')
    .option('--port <port>', 'the NFS server port', '2049')
    .option('--check', 'exit 1 when the check finds an error (for provisioning scripts)')
    .action(async (flags: Flags) => {
      try {
        if (!flags.dir.startsWith('/'))
          throw new UsageError(`--dir "${flags.dir}" must be an absolute path.`);
        const port = intArg('--port', flags.port, 1, 65535);
        const opts = {
          dir: flags.dir,
          proxyAddress: flags.proxyAddress,
          pseudoRoot: flags.pseudoRoot,
        };
        process.stdout.write(`${nfsExportLine(opts)}\n`);
        const findings: ExportFinding[] = [];
        const text = await readOptional(flags.exports);
        if (text === undefined)
          findings.push({
            level: 'error',
            message: `${flags.exports} does not exist: add the line above to it, then run exportfs -ra`,
          });
        else findings.push(...checkExports(text, opts));
        const tcp = (await readOptional('/proc/net/tcp')) ?? '';
        const tcp6 = (await readOptional('/proc/net/tcp6')) ?? '';
        findings.push(
          ...checkNfsListeners(
            [...listeningAddresses(tcp, port), ...listeningAddresses(tcp6, port)],
            port,
          ),
        );
        for (const f of findings)
          process.stderr.write(`ee-parent nfs-exports: ${f.level}: ${f.message}\n`);
        if (flags.check && findings.some((f) => f.level === 'error')) process.exit(1);
      } catch (err) {
        exitWithError(err);
      }
    });
}
