#!/bin/sh
# The VO's members and their groups, as a pool admin records them (run it as one:
# root or the server's own user on the server's host). An X.509 login puts these FQANs in
# the user's session token; pilotage.toml's [authz] and the site's policy read them.
set -eu

# Alice is in the VO...
pilotage admin vo add "/DC=org/DC=example/CN=Alice" /examplevo
# ...and in its analysis group.
pilotage admin vo add "/DC=org/DC=example/CN=Alice" /examplevo/analysis
# Carol is in the VO...
pilotage admin vo add "/DC=org/DC=example/CN=Carol" /examplevo
# ...runs production...
pilotage admin vo add "/DC=org/DC=example/CN=Carol" /examplevo/production
# ...and may administer the pool (an [authz] admin entry names this role).
pilotage admin vo add "/DC=org/DC=example/CN=Carol" /examplevo/Role=admin
# Dave is in the VO...
pilotage admin vo add "/DC=org/DC=example/CN=Dave" /examplevo
# ...and runs production too.
pilotage admin vo add "/DC=org/DC=example/CN=Dave" /examplevo/production
