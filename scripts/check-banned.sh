#!/bin/sh
# STYLE 16: calls that are unsafe or thread-unsafe are banned from src/; their safe forms are
# snprintf, buf_append, strtoll/strtod, strtok_r and gmtime_r/localtime_r.
set -eu
cd "$(dirname "$0")/.."
pattern='\<(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|gets|gmtime|localtime|asctime|ctime)[[:space:]]*\('
if grep -rnE "$pattern" src/ | grep -vE '(snprintf|vsnprintf|_r[[:space:]]*\()'; then
    echo "check-banned: the calls above are banned (see STYLE.md 16)" >&2
    exit 1
fi
echo "check-banned: ok"
