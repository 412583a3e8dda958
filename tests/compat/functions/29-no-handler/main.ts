// A library module, uploaded by mistake: nothing answers requests.
export function add(a: number, b: number): number {
  return a + b;
}
export const version = "1.0.0";
console.log("module loaded");
