export type { EifErrorCode, EifErrorDetails } from './errors.js';
export { EifError, isEifError } from './errors.js';
