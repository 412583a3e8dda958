// Served over TLS by the suite's module server, imported as https://localhost:<port>/lib/v1/shout.ts
import { exclaim } from "./punctuation.ts";

export function shout(s: string): string {
  return exclaim(s.toUpperCase());
}
