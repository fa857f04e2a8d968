/* cmd_maint.h - the maintenance commands: forget (cmd_forget.c), prune (cmd_prune.c), check and
 * repair (cmd_check.c), maintain (cmd_maintain.c). What they share is in cli/maint.h; the writer
 * lock that `backup` takes so that prune stays safe beside it is in cli/writer_lock.h. Each gets
 * argv from its own name on and returns an exit code. */
#ifndef PV_CLI_CMD_MAINT_H
#define PV_CLI_CMD_MAINT_H

#include "cli/cli.h"

int cmd_forget(struct cli *g, int argc, char **argv);
int cmd_prune(struct cli *g, int argc, char **argv);
int cmd_check(struct cli *g, int argc, char **argv);
int cmd_repair(struct cli *g, int argc, char **argv);
/* `repair versions` (cmd_repair_versions.c), to which cmd_repair hands "versions". */
int cmd_repair_versions(struct cli *g, int argc, char **argv);
int cmd_maintain(struct cli *g, int argc, char **argv);
/* `repair snapshots` (cmd_heal.c); argv[optind] is "snapshots". */
int cmd_repair_snapshots(struct cli *g, int argc, char **argv);
struct repo;
/* After a check that found errors: lists the snapshots and files that lost data (the index is
 * loaded if it was not); with read_data, data blobs that cannot be read count as lost too.
 * Prints its own error and returns -1 when it cannot. */
int cli_check_damage(struct cli *g, struct repo *r, bool read_data);

#endif
