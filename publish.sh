#!/usr/bin/env bash
# Signed publishing of a site to a partner's receiver arrives with the
# publishing issue; until then this says so instead of doing half a job.
echo "publish.sh: not yet — signed publishing arrives with the publishing issue (fedstac publish)." >&2
exit 2
