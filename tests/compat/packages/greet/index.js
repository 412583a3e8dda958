export function greet(name) {
  return `Hello, ${name}!`;
}
export const GREETING_VERSION = "1.0.0";
