/**
 * The one port parser of enclave-extras (endpoints, allowlists, CLI flags). A port is written in
 * decimal digits only: `1e3`, `0x50`, `0o120`, `+80`, `' '` and `''` are not ports (JavaScript's
 * Number() would read them as 1000, 80, 80, 80, 0 and 0). Returns undefined when `value` is not
 * an integer in [min, max]; the caller raises its own error naming the field.
 */
export function strictPort(value: unknown, max = 65535, min = 0): number | undefined {
  let n: number;
  if (typeof value === 'number') {
    n = value;
  } else if (typeof value === 'string' && /^[0-9]{1,10}$/.test(value)) {
    n = Number(value);
  } else {
    return undefined;
  }
  return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined;
}
