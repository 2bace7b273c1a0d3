#!/bin/sh
# Print the sum of the integer arguments.
total=0
for n in "$@"; do
  total=$((total + n))
done
echo "$total"
