import { rpcProxy } from "./client.js";
import { RobotWorldRead } from "./robot_world.js";

export async function page(): Promise<number> {
  return rpcProxy(RobotWorldRead).countRobots("m1"); // expect TS2345
}
