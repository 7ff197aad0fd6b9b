import { rpc } from "./client.js";
import { RobotWorldRead } from "./robot_world.js";

export async function page(): Promise<number> {
  return rpc.proxy(RobotWorldRead).countRobots("m1"); // expect TS2345
}
