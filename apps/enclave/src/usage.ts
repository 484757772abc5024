// One usage-error format for both apps (`<bin>: ERR_USAGE: ...`, exit 2; unknown options before
// missing required ones; help wrapped at 80 columns): one copy, in apps/parent/src/usage.ts,
// bundled into each app's dist by tsup.
export * from '../../parent/src/usage.js';
