export function exclaim(s: string): string {
  return `${s}!`;
}
