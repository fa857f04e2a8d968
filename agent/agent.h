/* agent.h - `podvault agent`: the node agent that serves Velero's PodVolumeBackups and
 * PodVolumeRestores on one node (see docs/AGENT.md).
 *
 * The CLI dispatches the `agent` command here with argv[0] = "agent" and the command's options
 * after it. It runs until SIGTERM or SIGINT, then stops as controller.h describes, and returns
 * the process exit code: 0 after a clean stop, 1 when it could not start, 2 for usage errors.
 */
#ifndef PV_AGENT_AGENT_H
#define PV_AGENT_AGENT_H

int agent_main(int argc, char **argv);

#endif
