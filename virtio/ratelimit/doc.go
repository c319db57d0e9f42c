// Package ratelimit owns the token buckets that throttle virtio devices:
// a bandwidth bucket (bytes) and an operations bucket (requests or packets)
// per limiter, each with a size, a refill time and a one-time burst, like
// Firecracker's rate limiters.
//
// A device worker asks Delay before it takes work off its queue and Charge
// after it knows the work's size. Buckets may run into debt (a request is
// admitted whenever no bucket is in debt and charged in full afterwards), so
// the long-run rate is exact whatever the request sizes, even requests
// larger than a bucket, and the worker never needs a request's size before it
// decides to take it: a throttled request stays in the guest's available
// ring. The worker sleeps on a Clock timer for the delay (or until Set
// changes the limits), so it neither spins nor holds up a vCPU.
//
// Time comes from a Clock so the arithmetic is tested with ManualClock,
// without sleeping.
package ratelimit
