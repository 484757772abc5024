// The app tests' helpers (spawn the built CLI and read its JSON log lines, hash/echo servers,
// vsock-emulation dialling) are shared with ee-parent's tests: one copy, in apps/parent/test.
export * from '../../parent/test/helpers.js';
