//go:build !linux

package seal

// mapPopulate is Linux's; elsewhere pages are mapped as they are touched.
const mapPopulate = 0
