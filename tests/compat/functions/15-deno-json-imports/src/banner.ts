export function banner(): string {
  return "== import map ==";
}
