import { execFile } from 'node:child_process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Set when the program could not be started (ENOENT: not installed). */
  spawnError?: NodeJS.ErrnoException;
}

/**
 * Runs a system program (mount, umount, mkfs.ext4, sync) without a shell and without blocking
 * the event loop: the enclave-side proxy that carries the NFS traffic may run in this process.
 */
export function run(
  file: string,
  args: readonly string[],
  options: { signal?: AbortSignal; timeoutMs?: number; input?: Uint8Array } = {},
): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      {
        encoding: 'utf8',
        timeout: options.timeoutMs ?? 0,
        ...(options.signal ? { signal: options.signal } : {}),
        env: { ...process.env, LC_ALL: 'C' },
      },
      (err, stdout, stderr) => {
        if (!err) return resolve({ code: 0, stdout, stderr });
        const e = err as NodeJS.ErrnoException & { code?: unknown };
        if (typeof e.code === 'number') return resolve({ code: e.code, stdout, stderr });
        resolve({ code: -1, stdout, stderr: stderr || e.message, spawnError: e });
      },
    );
    // secrets (a key for `--key-file=-`) go through a pipe: never argv, never a file
    if (options.input) {
      child.stdin?.on('error', () => {}); // the program may exit before reading it all
      child.stdin?.end(options.input);
    } else child.stdin?.end();
  });
}
