from ferry.infra import service
from services.notifier.bootstrap import main

service.run("notifier", main)
