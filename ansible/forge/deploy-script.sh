# Laravel Forge: the "Deploy Script" of the site that holds the MailboxKit checkout
# (Site > Deployments > Deploy Script). Run site.yml against the box once first: it installs
# the service, mailboxkit-release and the sudoers rule that lets forge run it.
cd $FORGE_SITE_PATH
git pull origin $FORGE_SITE_BRANCH

# A new release in its own virtualenv, migrate once, switch, restart, check /readyz,
# keep the newest mailboxkit_keep_releases (the same steps as ansible/deploy.yml).
sudo /usr/local/sbin/mailboxkit-release "$FORGE_SITE_PATH"
