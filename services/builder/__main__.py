from ferry.infra import service
from services.builder.bootstrap import main

service.run("builder", main)
