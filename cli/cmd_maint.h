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

#endif
