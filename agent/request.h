/* request.h - `podvault request`: ask the node agents for pod volume backups and restores the way
 * Velero's server does (PodVolumeBackup and PodVolumeRestore objects), wait, and report.
 *
 *   podvault request backup --namespace NS [--selector LABELS] [--name NAME] [--default-volumes]
 *                           [--wait] [--timeout SECONDS]
 *   podvault request status NAME
 *   podvault request restore --from NAME --namespace NS [--name NAME] [--wait] [--timeout S]
 *   podvault request cancel NAME [--wait] [--timeout S]
 * (cancel sets spec.cancel on every object of the backup, else restore, named NAME that is not
 * final; with --wait it waits until all are final, which is success.)
 * Connection options as the agent's: --server URL | --kubeconfig FILE [--context NAME] |
 * in-cluster; --velero-namespace NS (default $VELERO_NAMESPACE or "velero") is where the objects
 * and the node agents live. The CLI dispatches here with argv[0] = "request". Returns the exit
 * code: 0 when everything completed (or was created, without --wait), 1 when something failed
 * or timed out, 2 for usage errors.
 */
#ifndef PV_AGENT_REQUEST_H
#define PV_AGENT_REQUEST_H

int request_main(int argc, char **argv);

#endif
