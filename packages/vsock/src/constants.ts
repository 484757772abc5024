/** Any CID: bind/listen on every local CID (VMADDR_CID_ANY). */
export const CID_ANY = 0xffffffff;
/** The hypervisor (VMADDR_CID_HYPERVISOR). */
export const CID_HYPERVISOR = 0;
/** Local loopback inside one VM (VMADDR_CID_LOCAL, needs the vsock_loopback module). */
export const CID_LOCAL = 1;
/** The host of a VM (VMADDR_CID_HOST). */
export const CID_HOST = 2;
/** The parent EC2 instance as seen from a Nitro Enclave. */
export const CID_PARENT = 3;
/** Any port: let the kernel (or the emulation) pick one (VMADDR_PORT_ANY). */
export const PORT_ANY = 0xffffffff;

/** Largest CID/port value (both are u32). */
export const U32_MAX = 0xffffffff;
