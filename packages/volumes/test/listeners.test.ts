import { describe, expect, it } from 'vitest';
import { checkNfsListeners, listeningAddresses } from '../src/index.js';

// Lines as the kernel writes them (header, then sl local rem st ...).
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0801 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0801 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:0801 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
`;
const TCP6 = `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0801 00000000000000000000000000000000:0000 0A 0
   1: 00000000000000000000000000000000:0801 00000000000000000000000000000000:0000 0A 0
`;

describe('NFS listener check', () => {
  it('reads LISTEN sockets on the port from /proc/net/tcp and tcp6', () => {
    expect(listeningAddresses(TCP)).toEqual(['0.0.0.0', '127.0.0.1']);
    expect(listeningAddresses(TCP6)).toEqual(['0:0:0:0:0:0:0:1', '0:0:0:0:0:0:0:0']);
    expect(listeningAddresses(TCP, 8080)).toEqual(['127.0.0.1']);
  });

  it('warns only when the server listens beyond loopback', () => {
    expect(checkNfsListeners(['127.0.0.1', '0:0:0:0:0:0:0:1'])).toEqual([]);
    const w = checkNfsListeners(listeningAddresses(TCP));
    expect(w).toHaveLength(1);
    expect(w[0]?.message).toMatch(/listens on 0\.0\.0\.0 port 2049/);
  });
});
