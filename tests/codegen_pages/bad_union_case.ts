import type { Circle, Square } from "./conformance.js";

export const shape: Circle | Square = { kind: "circle", center: { x: 0, y: 0 }, side: 1 }; // expect TS2353
