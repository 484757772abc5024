/** A pino-compatible logger (the subset this package calls). */
export interface VolumeLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug?(obj: object, msg?: string): void;
}

export const silentLogger: VolumeLogger = { info() {}, warn() {} };
