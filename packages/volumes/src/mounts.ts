import { readdirSync, readFileSync } from 'node:fs';

function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** The mounts this process sees (/proc/self/mountinfo). */
export function listMounts(): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    const f = (left ?? '').split(' ');
    const r = (right ?? '').split(' ');
    out.push({
      mountPoint: unescapeOctal(f[4] ?? ''),
      fsType: r[0] ?? '',
      source: unescapeOctal(r[1] ?? ''),
    });
  }
  return out;
}

export function isMountPoint(path: string): boolean {
  return listMounts().some((m) => m.mountPoint === path);
}

/** Loop devices whose backing file is `file` (the image already attached somewhere in this kernel). */
export function loopDevicesFor(file: string): string[] {
  const found: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync('/sys/block').filter((n) => n.startsWith('loop'));
  } catch {
    return found;
  }
  for (const n of names) {
    try {
      const b = readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim();
      if (b === file || b === `${file} (deleted)`) found.push(`/dev/${n}`);
    } catch {
      // not attached
    }
  }
  return found;
}
