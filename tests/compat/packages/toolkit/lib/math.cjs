"use strict";
exports.mean = function (xs) {
  return xs.length === 0 ? 0 : xs.reduce(function (a, b) { return a + b; }, 0) / xs.length;
};
