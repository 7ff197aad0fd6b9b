import { isApplicationError } from "tether-client";
import { RobotNotFound } from "./robot_world.js";

export function page(e: unknown): string {
  if (isApplicationError(e, RobotNotFound)) {
    return e.details.fields.robot_name; // expect TS2339
  }
  return "";
}
