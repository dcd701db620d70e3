#!/bin/sh
# An example job: greets, does a little work on its input, and leaves a result file.
set -eu
item="$1"
echo "hello from job $PILOTAGE_JOB_ID on $(hostname), item $item"
words=$(wc -w < words.txt)
sleep "${HELLO_SLEEP:-1}"
echo "item=$item words=$words" > "result-$item.txt"
echo "done"
