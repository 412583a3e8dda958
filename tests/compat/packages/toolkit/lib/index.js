export { reverse } from "./strings.js";
export { mean } from "./math.mjs";
export const name = "toolkit";
