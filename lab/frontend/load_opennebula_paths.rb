# The lab front-end's load_opennebula_paths.rb (kvmprep's, lab/frontend/Containerfile).
#
# OpenNebula's packages put a file of this name on Ruby's load path; every Ruby part of OpenNebula
# (the CLI, the drivers, monitord's probes) requires it first. A source install leaves OpenNebula's
# own copy in /usr/lib/one/ruby, off the load path, and that copy points RubyGems at the gems the
# packages bundle. The lab uses Debian's Ruby libraries instead, so this one only defines the
# locations OpenNebula's scripts expect and puts its Ruby directories on the load path.
ONE_LOCATION = ENV['ONE_LOCATION'] unless defined?(ONE_LOCATION)

if !ONE_LOCATION
  RUBY_LIB_LOCATION ||= '/usr/lib/one/ruby'
  GEMS_LOCATION ||= '/usr/share/one/gems'
else
  RUBY_LIB_LOCATION ||= ONE_LOCATION + '/lib/ruby'
  GEMS_LOCATION ||= ONE_LOCATION + '/share/gems'
end

[RUBY_LIB_LOCATION, RUBY_LIB_LOCATION + '/cloud'].each do |dir|
  $LOAD_PATH << dir if File.directory?(dir) && !$LOAD_PATH.include?(dir)
end
