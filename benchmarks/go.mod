module github.com/imbus/eventbus/benchmarks

go 1.26.0

require (
	github.com/ThreeDotsLabs/watermill v1.5.1
	github.com/alitto/pond/v2 v2.7.1
	github.com/asaskevich/EventBus v0.0.0-20200907212545-49d423059eef
	github.com/imbus/eventbus v0.0.0
	github.com/kelindar/event v1.5.2
	github.com/panjf2000/ants/v2 v2.12.1
	go.uber.org/goleak v1.3.0
)

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/lithammer/shortuuid/v3 v3.0.7 // indirect
	github.com/oklog/ulid v1.3.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	golang.org/x/sync v0.11.0 // indirect
)

replace github.com/imbus/eventbus => ../
