import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder of this module (dist/ when built, src/ under vitest). */
function here(): string {
  return dirname(fileURLToPath(import.meta.url));
}

/** A file shipped in dist/ (the static init, the supervisor), found from dist/ or src/. */
export function distFile(name: string): string | undefined {
  const dir = here();
  for (const candidate of [join(dir, name), join(dir, '..', 'dist', name)]) {
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** Finds an executable on PATH. */
export function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}
