"use strict";
exports.sum = function (xs) {
  return xs.reduce(function (a, b) { return a + b; }, 0);
};
