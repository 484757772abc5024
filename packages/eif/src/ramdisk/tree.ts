import { EifError } from '../errors.js';

/** Where a regular file's bytes are. */
export type ContentRef =
  /** In the private spill file (image layers), at `offset`. */
  | { kind: 'spill'; offset: number }
  /** In a file on disk (directory source). */
  | { kind: 'file'; path: string }
  /** In memory (small synthetic files: cmd, env, /etc/hosts). */
  | { kind: 'bytes'; data: Buffer };

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo';

/** One inode: hardlinked paths share the same object. */
export interface Inode {
  type: EntryType;
  /** Permission bits incl. setuid/setgid/sticky (`mode & 0o7777`). */
  perm: number;
  uid: number;
  gid: number;
  size: number;
  linkname?: string;
  rdevMajor: number;
  rdevMinor: number;
  content?: ContentRef;
}

export interface TreeNode {
  inode: Inode;
  /** Layer that last wrote this path (opaque directories drop children of lower layers). */
  layer: number;
  children?: Map<string, TreeNode>;
}

/** A path of the flattened tree in output order, with hardlink bookkeeping. */
export interface WalkEntry {
  path: string;
  inode: Inode;
}

const MAX_SYMLINK_HOPS = 40;

function traversal(path: string, why: string, source: string): EifError {
  return new EifError(
    'ERR_EIF_ROOTFS_TRAVERSAL',
    `${source}: entry ${JSON.stringify(path)} ${why}; the image is refused because it would place files ` +
      'outside its root file system. Rebuild the image without that entry.',
    { field: path, source },
  );
}

function invalid(path: string, why: string, source: string): EifError {
  return new EifError('ERR_EIF_ROOTFS_INVALID', `${source}: entry ${JSON.stringify(path)} ${why}`, {
    field: path,
    source,
  });
}

/**
 * Splits an archive path into components. Leading `./` and `.` components are dropped; absolute
 * paths and `..` components are refused (ERR_EIF_ROOTFS_TRAVERSAL).
 */
export function splitPath(name: string, source: string): string[] {
  if (name.startsWith('/')) throw traversal(name, 'is an absolute path', source);
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw traversal(name, 'contains a ".." component', source);
    out.push(part);
  }
  return out;
}

export function dirInode(perm = 0o755, uid = 0, gid = 0): Inode {
  return { type: 'dir', perm, uid, gid, size: 0, rdevMajor: 0, rdevMinor: 0 };
}

/** Compares two names by the bytes of their UTF-8 encoding (the output order). */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * The flattened root file system: layers applied in order (OCI image spec "applying changesets"):
 * whiteouts (`.wh.name`) delete, opaque markers (`.wh..wh..opq`) hide what lower layers put in a
 * directory, a non-directory replaces whatever was at its path, a directory over a directory only
 * updates its metadata. Nothing is written to disk; contents are referenced, not held.
 */
export class FlatTree {
  readonly root: TreeNode = { inode: dirInode(), layer: -1, children: new Map() };

  /**
   * Resolves a directory path for an entry being added. Missing directories are created (0755,
   * root) when `create`; a symlink on the way is followed only when its target is relative and
   * stays inside the root, any other symlink parent is a traversal attempt.
   */
  private resolveDir(
    parts: readonly string[],
    create: boolean,
    layer: number,
    entry: string,
    source: string,
    hops = 0,
  ): { node: TreeNode; path: string[] } | undefined {
    let node = this.root;
    const path: string[] = [];
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i] as string;
      const children = node.children as Map<string, TreeNode>;
      let child = children.get(name);
      if (child === undefined) {
        if (!create) return undefined;
        child = { inode: dirInode(), layer, children: new Map() };
        children.set(name, child);
      }
      if (child.inode.type === 'symlink') {
        const target = child.inode.linkname ?? '';
        if (target.startsWith('/')) {
          throw traversal(
            entry,
            `has the symlink ${JSON.stringify([...path, name].join('/'))} -> ${JSON.stringify(target)} (absolute) as a parent directory`,
            source,
          );
        }
        if (hops >= MAX_SYMLINK_HOPS) {
          throw invalid(entry, `goes through more than ${MAX_SYMLINK_HOPS} symlinks`, source);
        }
        const resolved = [...path];
        for (const part of target.split('/')) {
          if (part === '' || part === '.') continue;
          if (part === '..') {
            if (resolved.length === 0) {
              throw traversal(
                entry,
                `has the symlink ${JSON.stringify([...path, name].join('/'))} -> ${JSON.stringify(target)}, which climbs above the root, as a parent directory`,
                source,
              );
            }
            resolved.pop();
          } else resolved.push(part);
        }
        const rest = parts.slice(i + 1);
        return this.resolveDir([...resolved, ...rest], create, layer, entry, source, hops + 1);
      }
      if (child.inode.type !== 'dir') {
        throw invalid(
          entry,
          `has ${JSON.stringify([...path, name].join('/'))} as a parent directory, but that is a ${child.inode.type}`,
          source,
        );
      }
      path.push(name);
      node = child;
    }
    return { node, path };
  }

  /** Adds (or replaces) the entry at `name` written by `layer`. */
  add(name: string, inode: Inode, layer: number, source: string): void {
    const parts = splitPath(name, source);
    if (parts.length === 0) return; // the root itself: its metadata is ours (rootfs/ 0755)
    const base = parts[parts.length - 1] as string;
    const parent = this.resolveDir(parts.slice(0, -1), true, layer, name, source);
    const children = parent?.node.children as Map<string, TreeNode>;
    const existing = children.get(base);
    if (inode.type === 'dir' && existing !== undefined && existing.inode.type === 'dir') {
      existing.inode = { ...inode };
      existing.layer = layer;
      return;
    }
    children.set(base, {
      inode,
      layer,
      ...(inode.type === 'dir' ? { children: new Map<string, TreeNode>() } : {}),
    });
  }

  /** A tar hardlink: `name` becomes another path of the inode at `target`. */
  link(name: string, target: string, layer: number, source: string): void {
    let targetParts: string[];
    try {
      targetParts = splitPath(target, source);
    } catch {
      throw traversal(
        name,
        `is a hardlink to ${JSON.stringify(target)}, outside the root file system`,
        source,
      );
    }
    const targetNode = this.lookup(targetParts, name, source);
    if (targetNode === undefined) {
      throw invalid(
        name,
        `is a hardlink to ${JSON.stringify(target)}, which does not exist (yet) in the image; a hardlink must name an earlier entry`,
        source,
      );
    }
    if (targetNode.inode.type === 'dir') {
      throw invalid(name, `is a hardlink to the directory ${JSON.stringify(target)}`, source);
    }
    const parts = splitPath(name, source);
    if (parts.length === 0) throw invalid(name, 'is a hardlink at the root', source);
    const base = parts[parts.length - 1] as string;
    const parent = this.resolveDir(parts.slice(0, -1), true, layer, name, source);
    const children = parent?.node.children as Map<string, TreeNode>;
    children.set(base, { inode: targetNode.inode, layer });
  }

  private lookup(parts: string[], entry: string, source: string): TreeNode | undefined {
    if (parts.length === 0) return this.root;
    const parent = this.resolveDir(parts.slice(0, -1), false, 0, entry, source);
    return parent?.node.children?.get(parts[parts.length - 1] as string);
  }

  /** `dir/.wh.name`: removes `dir/name` and everything below it. */
  whiteout(dir: string, name: string, source: string): void {
    const parts = splitPath(dir, source);
    if (name === '' || name === '.' || name === '..' || name.includes('/')) {
      throw traversal(`${dir}/.wh.${name}`, 'is a whiteout of an invalid name', source);
    }
    const parent = this.resolveDir(parts, false, 0, `${dir}/.wh.${name}`, source);
    parent?.node.children?.delete(name);
  }

  /** `dir/.wh..wh..opq`: hides everything lower layers put in `dir`. */
  opaque(dir: string, layer: number, source: string): void {
    const parts = splitPath(dir, source);
    const parent = this.resolveDir(parts, true, layer, `${dir}/.wh..wh..opq`, source);
    const children = parent?.node.children;
    if (children === undefined) return;
    for (const [name, child] of children) if (child.layer < layer) children.delete(name);
  }

  /** Returns the node at `path` (no symlink following), for adjustments after flattening. */
  get(path: string): TreeNode | undefined {
    let node: TreeNode | undefined = this.root;
    for (const part of path.split('/')) {
      if (part === '') continue;
      node = node?.children?.get(part);
    }
    return node;
  }

  /** Sets `path` (parents must be directories) to `inode`, replacing what is there. */
  put(path: string, inode: Inode): void {
    this.add(path, inode, Number.MAX_SAFE_INTEGER, 'rootfs');
  }

  /** Removes `path` (and what is below it) if present. */
  remove(path: string): void {
    const parts = path.split('/').filter((p) => p !== '');
    const base = parts.pop();
    if (base === undefined) return;
    let node: TreeNode | undefined = this.root;
    for (const part of parts) node = node?.children?.get(part);
    node?.children?.delete(base);
  }

  /**
   * Depth-first walk, children in byte order of their UTF-8 names, so a directory always comes
   * before what it contains and the order depends on nothing but the tree.
   */
  *walk(prefix = ''): Generator<WalkEntry> {
    yield* walkNode(this.root, prefix);
  }

  /** Number of entries and total regular-file bytes (each inode counted once). */
  stats(): { entryCount: number; totalBytes: number } {
    let entryCount = 0;
    let totalBytes = 0;
    const seen = new Set<Inode>();
    for (const e of this.walk()) {
      entryCount++;
      if (e.inode.type === 'file' && !seen.has(e.inode)) {
        seen.add(e.inode);
        totalBytes += e.inode.size;
      }
    }
    return { entryCount, totalBytes };
  }
}

function* walkNode(node: TreeNode, prefix: string): Generator<WalkEntry> {
  if (node.children === undefined) return;
  const names = [...node.children.keys()].sort(compareNames);
  for (const name of names) {
    const child = node.children.get(name) as TreeNode;
    const path = prefix === '' ? name : `${prefix}/${name}`;
    yield { path, inode: child.inode };
    if (child.inode.type === 'dir') yield* walkNode(child, path);
  }
}
