module github.com/appliance-bundler/appliance

go 1.26.0
