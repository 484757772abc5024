// ee-eif command line: filled in by the build/describe/pcr/sign commands.
export {};
