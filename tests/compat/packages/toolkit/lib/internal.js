// Not in the exports map: importing "@skiff-test/toolkit/lib/internal.js" must fail.
export const secret = "internal";
