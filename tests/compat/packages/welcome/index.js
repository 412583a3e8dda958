import { greet } from "@skiff-test/greet";

export function welcome(name, place) {
  return `${greet(name)} Welcome to ${place}.`;
}
