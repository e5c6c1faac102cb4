# frozen_string_literal: true

# Mastodon's media storage calls, made the way Mastodon makes them, against any S3 endpoint.
#
# Runs on Debian's ruby-aws-sdk-s3 (1.117; `apt-get install -y ruby-aws-sdk-s3`), the aws-sdk-s3 that
# Mastodon's Gemfile pulls in. Emulates:
#   config/initializers/paperclip.rb   Aws::S3::Client options: signature_version 'v4', region,
#                                      http_open_timeout/http_read_timeout/http_idle_timeout 5,
#                                      retry_limit 0, endpoint S3_ENDPOINT, force_path_style
#                                      (true unless S3_OVERRIDE_PATH_STYLE=true); s3_headers
#                                      'Cache-Control' => 'public, max-age=315576000, immutable' and
#                                      'X-Amz-Multipart-Threshold' => 15.megabytes; s3_permissions
#                                      'public-read'; media URLs ':s3_path_url'
#                                      (S3_PROTOCOL://S3_HOSTNAME/S3_BUCKET/path) or S3_ALIAS_HOST
#   kt-paperclip storage/s3.rb         flush_writes: Aws::S3::Object#upload_file(path, content_type:,
#                                      acl:, cache_control:, multipart_threshold:) -> one put_object
#                                      below the threshold, a multipart upload above it;
#                                      flush_deletes: Object#delete
#   paperclip.rb S3Extensions          copy_to_local_file: Object#download_file (mode 'auto':
#                                      head_object part_number 1, then ranged or partNumber GETs;
#                                      'single_request' with S3_FORCE_SINGLE_REQUEST=true)
#   app/lib/attachment_batch.rb        Bucket#delete_objects(delete: { objects: [{ key: }], quiet: true })
#                                      in slices of S3_BATCH_DELETE_LIMIT (1000)
#   app/services/suspend_account_service.rb / unsuspend_account_service.rb
#                                      s3_object(style).acl.put(acl: 'private' | 'public-read')
#   lib/mastodon/cli/upgrade.rb        object.exists? (head_object) then object.move_to(new_key)
#                                      (copy_object without an ACL, then delete_object)
# plus a ranged get_object (what a media proxy in front of the bucket asks for) and anonymous
# Net::HTTP GETs of the media URLs, as browsers and other servers fetch them, with an Origin header.
#
# Usage (or the S3_* environment variables of the same names):
#   ruby s3_mastodon.rb --endpoint http://127.0.0.1:9000 --region us-east-1 --access-key-id K
#        --secret-access-key S --bucket B --workdir DIR [--addressing path|virtual]
#        [--public-base URL] [--origin https://mastodon.example] [--size-mib 20]
# --addressing virtual is Mastodon's S3_OVERRIDE_PATH_STYLE=true (force_path_style false): the SDK then
# sends BUCKET.HOST; it needs a host name endpoint (http://s3.localhost:9000). Names under .localhost
# are resolved to 127.0.0.1 inside this process (RFC 6761), the way a wildcard DNS record would.
# Prints one JSON line; exits 1 with "FAIL <step>: <why>" on stderr at the first failure.

require 'aws-sdk-s3'
require 'digest'
require 'fileutils'
require 'json'
require 'net/http'
require 'optparse'
require 'securerandom'
require 'uri'

MIB = 1024 * 1024
CACHE_CONTROL = 'public, max-age=315576000, immutable'

# *.localhost is loopback (RFC 6761); the system resolver here does not know it.
module LoopbackNames
  def conn_address
    address = super
    address.end_with?('.localhost') ? '127.0.0.1' : address
  end
end
Net::HTTP.prepend(LoopbackNames)
Thread.report_on_exception = false # download_file's threads: their errors are re-raised and reported once

class Failure < StandardError; end

def fail_at(step, why)
  raise Failure, "#{step}: #{why}"
end

def check(step, cond, why)
  fail_at(step, why.respond_to?(:call) ? why.call : why) unless cond
end

# A departure from S3 that none of Mastodon's calls depends on: recorded in "deviations", not fatal.
DEVIATIONS = []
def soft(step, cond, why)
  DEVIATIONS << "#{step}: #{why.respond_to?(:call) ? why.call : why}" unless cond
end

# Deterministic bytes that do not compress: a SHA-256 counter stream.
def gen(size, seed)
  out = String.new(capacity: size + 32, encoding: Encoding::BINARY)
  counter = 0
  while out.bytesize < size
    out << Digest::SHA256.digest("#{seed}:#{counter}")
    counter += 1
  end
  out.byteslice(0, size)
end

def md5_etag(data)
  %("#{Digest::MD5.hexdigest(data)}")
end

def multipart_etag(data, part_size)
  digests = (0...data.bytesize).step(part_size).map { |o| Digest::MD5.digest(data.byteslice(o, part_size)) }
  %("#{Digest::MD5.hexdigest(digests.join)}-#{digests.size}")
end

def expect_error(step, status, codes = nil, lenient: false)
  yield
  fail_at(step, "expected HTTP #{status}, the call succeeded")
rescue Aws::S3::Errors::ServiceError => e
  got = e.context.http_response.status_code
  ok = got == status && (codes.nil? || codes.include?(e.class.name.split('::').last))
  (lenient ? method(:soft) : method(:check)).call(step, ok, "expected HTTP #{status} #{codes&.join('|')}, got #{got} #{e.class.name.split('::').last}: #{e.message}")
  e
end

opts = {
  'endpoint' => ENV['S3_ENDPOINT'], 'region' => ENV['S3_REGION'], 'access-key-id' => ENV['S3_ACCESS_KEY_ID'],
  'secret-access-key' => ENV['S3_SECRET_ACCESS_KEY'], 'bucket' => ENV['S3_BUCKET'], 'workdir' => ENV['S3_WORKDIR'],
  'addressing' => ENV['S3_ADDRESSING'] || 'path', 'public-base' => ENV['S3_PUBLIC_BASE'],
  'origin' => ENV['S3_ORIGIN'] || 'https://mastodon.example', 'size-mib' => ENV['S3_SIZE_MIB'] || '20',
}
begin
  OptionParser.new do |o|
    opts.each_key { |name| o.on("--#{name} VALUE") { |v| opts[name] = v } }
  end.parse!(ARGV)
  %w[endpoint region access-key-id secret-access-key bucket workdir].each do |need|
    fail_at('arguments', "--#{need} (or S3_#{need.upcase.tr('-', '_')}) is required") unless opts[need]
  end
  fail_at('arguments', '--addressing path|virtual') unless %w[path virtual].include?(opts['addressing'])
  if opts['addressing'] == 'virtual' && URI(opts['endpoint']).host.match?(/\A(\d+\.){3}\d+\z|\A\[/)
    fail_at('arguments', '--addressing virtual needs a host name endpoint (http://s3.localhost:PORT): against an IP ' \
                         'address aws-sdk-s3 silently sends path-style requests even with force_path_style false')
  end
rescue OptionParser::ParseError, Failure => e
  warn "FAIL #{e.message.start_with?('arguments') ? e.message : "arguments: #{e.message}"}"
  exit 1
end

# What went on the wire, as the SDK finished it (after signing), one summary per operation.
WIRE_HEADERS = %w[
  content-length content-encoding content-md5 content-type transfer-encoding expect x-amz-content-sha256
  x-amz-decoded-content-length x-amz-trailer x-amz-sdk-checksum-algorithm x-amz-checksum-crc32
  x-amz-checksum-crc32c x-amz-checksum-mode x-amz-acl cache-control range x-amz-copy-source
  x-amz-metadata-directive
].freeze
WIRE = {}
class WireRecorder < Seahorse::Client::Handler
  def call(context)
    headers = context.http_request.headers.to_h.transform_keys(&:downcase)
    seen = {}
    WIRE_HEADERS.each do |h|
      next unless headers.key?(h)

      seen[h] = h == 'content-md5' || h.start_with?('x-amz-checksum-crc') ? '(present)' : headers[h]
    end
    signed = headers['authorization'].to_s[/SignedHeaders=([^,]+)/, 1]
    seen['signed_headers'] = signed if signed
    endpoint = context.http_request.endpoint
    seen['host'] = endpoint.port == endpoint.default_port ? endpoint.host : "#{endpoint.host}:#{endpoint.port}"
    seen['path'] = endpoint.path
    seen['query'] = endpoint.query if endpoint.query
    WIRE[context.operation_name.to_s] ||= seen
    @handler.call(context)
  end
end

steps = []
measured = {}
t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
step = lambda do |name, &blk|
  start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  result = blk.call
  steps << name
  measured["#{name}_ms"] = ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - start) * 1000).round
  result
end

begin
  workdir = opts['workdir']
  FileUtils.mkdir_p(workdir)
  bucket_name = opts['bucket']
  endpoint = URI(opts['endpoint'])
  force_path_style = opts['addressing'] == 'path'
  run = SecureRandom.hex(4)
  prefix = "mastodon-#{opts['addressing']}-#{run}/"
  origin = opts['origin']

  # config/initializers/paperclip.rb s3_options
  client = Aws::S3::Client.new(
    region: opts['region'],
    credentials: Aws::Credentials.new(opts['access-key-id'], opts['secret-access-key']),
    signature_version: 'v4',
    http_open_timeout: 5,
    http_read_timeout: 5,
    http_idle_timeout: 5,
    retry_limit: 0,
    endpoint: opts['endpoint'],
    force_path_style: force_path_style
  )
  client.handlers.add(WireRecorder, step: :sign, priority: 0)
  bucket = Aws::S3::Resource.new(client: client).bucket(bucket_name)

  # ':s3_path_url' (S3_HOSTNAME = the endpoint's host here), or S3_ALIAS_HOST when given.
  public_base = if opts['public-base']
                  opts['public-base'].sub(%r{/?\z}, '/')
                else
                  "#{endpoint.scheme}://#{endpoint.host}#{":#{endpoint.port}" unless endpoint.port == endpoint.default_port}/#{bucket_name}/"
                end
  public_url = ->(key) { public_base + key.split('/').map { |s| URI.encode_www_form_component(s).gsub('+', '%20') }.join('/') }

  anonymous = lambda do |step_name, key, status:, range: nil, cors: true, bytes: nil|
    uri = URI(public_url.call(key))
    request = Net::HTTP::Get.new(uri)
    request['Origin'] = origin
    request['Range'] = range if range
    response = Net::HTTP.start(uri.host, uri.port, open_timeout: 5, read_timeout: 30) { |http| http.request(request) }
    check(step_name, response.code.to_i == status,
          -> { "anonymous GET #{uri}#{" #{range}" if range}: HTTP #{response.code}, expected #{status}: #{response.body.to_s[0, 200]}" })
    if cors
      allow = response['Access-Control-Allow-Origin']
      check(step_name, ['*', origin].include?(allow), "Access-Control-Allow-Origin #{allow.inspect} on the anonymous GET")
    end
    check(step_name, response.body.b == bytes.b, 'anonymous GET bytes differ') if bytes
    response
  end

  # kt-paperclip flush_writes, for one style of an attachment
  upload = lambda do |key, path, content_type|
    bucket.object(key).upload_file(path, content_type: content_type, acl: 'public-read',
                                         cache_control: CACHE_CONTROL, multipart_threshold: 15 * MIB)
  end

  # ---- an image (original + small): below the multipart threshold, one put_object each ----
  id_partition = format('%09d', rand(1_000_000_000)).scan(/\d{3}/).join('/')
  image_prefix = "#{prefix}media_attachments/files/#{id_partition}/"
  original = gen(2 * MIB + 4321, "original-#{run}")
  small = gen(48 * 1024 + 3, "small-#{run}")
  images = { "#{image_prefix}original/#{run}.png" => original, "#{image_prefix}small/#{run}.png" => small }
  step.call('put_object_public_read') do
    images.each do |key, data|
      path = File.join(workdir, File.basename(File.dirname(key)) + '.png')
      File.binwrite(path, data)
      check('put_object_public_read', upload.call(key, path, 'image/png'), 'upload_file returned false')
    end
  end

  # ---- a video above 15 MB: upload_file goes multipart ----
  video_size = (Float(opts['size-mib']) * MIB).round + 777
  video = gen(video_size, "video-#{run}")
  video_key = "#{prefix}media_attachments/files/#{id_partition}/original/#{run}.mp4"
  video_path = File.join(workdir, 'video.mp4')
  File.binwrite(video_path, video)
  step.call('upload_file_multipart') { upload.call(video_key, video_path, 'video/mp4') }
  measured['upload_bytes'] = video_size
  measured['upload_mib_s'] = (video_size.to_f / MIB / (measured['upload_file_multipart_ms'] / 1000.0)).round(1)
  # MultipartFileUploader 1.117: part size max(5 MiB, size / 10_000)
  part_size = [5 * MIB, (video_size.to_f / 10_000).ceil].max

  step.call('head_object') do
    images.merge(video_key => video).each do |key, data|
      head = client.head_object(bucket: bucket_name, key: key)
      check('head_object', head.content_length == data.bytesize, "#{key}: content_length #{head.content_length}")
      check('head_object', head.cache_control == CACHE_CONTROL, "#{key}: cache_control #{head.cache_control.inspect}")
      expected_type = key.end_with?('.mp4') ? 'video/mp4' : 'image/png'
      check('head_object', head.content_type == expected_type, "#{key}: content_type #{head.content_type.inspect}")
      expected_etag = key == video_key ? multipart_etag(video, part_size) : md5_etag(data)
      check('head_object', head.etag == expected_etag, "#{key}: ETag #{head.etag}, expected #{expected_etag}")
    end
    measured['multipart_etag'] = client.head_object(bucket: bucket_name, key: video_key).etag
    check('head_object', bucket.object(video_key).exists?, 'Object#exists? is false')
    check('head_object', !bucket.object("#{prefix}nope").exists?, 'Object#exists? of a missing key is true')
  end

  step.call('get_object_range') do
    [['bytes=0-1023', 0, 1023], ["bytes=#{video_size - 10}-", video_size - 10, video_size - 1],
     ['bytes=5242870-5242889', 5_242_870, 5_242_889]].each do |range, first, last|
      resp = client.get_object(bucket: bucket_name, key: video_key, range: range)
      body = resp.body.read
      check('get_object_range', resp.content_range == "bytes #{first}-#{last}/#{video_size}", "#{range}: content_range #{resp.content_range}")
      check('get_object_range', body.b == video.byteslice(first, last - first + 1).b, "#{range}: wrong bytes")
      check('get_object_range', resp.content_length == last - first + 1, "#{range}: content_length #{resp.content_length}")
    end
  end

  # ---- copy_to_local_file: download_file, both modes ----
  step.call('download_file') do
    head = client.head_object(bucket: bucket_name, key: video_key, part_number: 1)
    measured['head_part_number_1'] = { 'content_length' => head.content_length, 'parts_count' => head.parts_count }
    soft('download_file', head.parts_count == (video_size.to_f / part_size).ceil,
         "HeadObject partNumber=1: parts_count #{head.parts_count.inspect} (S3 gives the part count)")
    soft('download_file', head.content_length == part_size,
         "HeadObject partNumber=1: content_length #{head.content_length} (S3 gives part 1's length, #{part_size})")
    %w[auto single_request].each do |mode|
      dest = File.join(workdir, "downloaded-#{mode}.mp4")
      begin
        bucket.object(video_key).download_file(dest, mode: mode)
      rescue NoMethodError => e
        # file_downloader.rb reads Content-Range of every ranged or partNumber GET: Mastodon issue 16822,
        # what S3_FORCE_SINGLE_REQUEST=true (mode 'single_request') works around.
        raise unless mode == 'auto' && e.message.include?('split')

        soft('download_file', false, "mode auto: a GetObject partNumber=N answer had no Content-Range (#{e.message[/undefined method `\w+'/]}); " \
                                     'Mastodon operators then need S3_FORCE_SINGLE_REQUEST=true')
        next
      end
      check('download_file', Digest::SHA256.file(dest).hexdigest == Digest::SHA256.hexdigest(video), "mode #{mode}: bytes differ")
    end
  end

  # ---- media URLs, fetched by a browser ----
  step.call('anonymous_get_public') do
    anonymous.call('anonymous_get_public', images.keys.first, status: 200, bytes: original)
    resp = anonymous.call('anonymous_get_public', video_key, status: 206, range: 'bytes=0-99', bytes: video.byteslice(0, 100))
    check('anonymous_get_public', resp['Content-Range'] == "bytes 0-99/#{video_size}", "Content-Range #{resp['Content-Range']}")
    soft('anonymous_get_public', resp['Cache-Control'] == CACHE_CONTROL, "Cache-Control on the public GET: #{resp['Cache-Control'].inspect}")
  end

  # ---- suspend, then unsuspend, an account ----
  step.call('put_object_acl_private') do
    (images.keys + [video_key]).each { |key| bucket.object(key).acl.put(acl: 'private') }
    (images.keys + [video_key]).each { |key| anonymous.call('put_object_acl_private', key, status: 403, cors: false) }
    grants = client.get_object_acl(bucket: bucket_name, key: video_key).grants
    check('put_object_acl_private', grants.none? { |g| g.grantee.uri.to_s.end_with?('/global/AllUsers') }, "AllUsers still granted: #{grants.map(&:to_h)}")
    check('put_object_acl_private', client.head_object(bucket: bucket_name, key: video_key).content_length == video_size, 'the owner lost access')
  end
  step.call('put_object_acl_public_read') do
    (images.keys + [video_key]).each { |key| bucket.object(key).acl.put(acl: 'public-read') }
    anonymous.call('put_object_acl_public_read', images.keys.last, status: 200, bytes: small)
  end

  # ---- tootctl upgrade: exists? then move_to (copy_object without an ACL + delete_object) ----
  moved_key = "#{prefix}cache/media_attachments/files/#{id_partition}/small/#{run}.png"
  step.call('copy_object') do
    source = bucket.object(images.keys.last)
    check('copy_object', source.exists?, 'source does not exist')
    resp = client.copy_object(bucket: bucket_name, key: moved_key, copy_source: "#{bucket_name}/#{images.keys.last}")
    check('copy_object', resp.copy_object_result.etag == md5_etag(small), "CopyObjectResult ETag #{resp.copy_object_result.etag}")
    head = client.head_object(bucket: bucket_name, key: moved_key)
    check('copy_object', head.cache_control == CACHE_CONTROL && head.content_type == 'image/png',
          "metadata not copied: #{head.cache_control.inspect} #{head.content_type.inspect}")
    check('copy_object', client.get_object(bucket: bucket_name, key: moved_key).body.read.b == small.b, 'copy bytes differ')
    # S3 gives a copy the default (private) ACL unless x-amz-acl is sent; Mastodon's move_to sends none.
    anonymous.call('copy_object', moved_key, status: 403, cors: false)
    source.delete
    check('copy_object', !source.exists?, 'move_to left the source')
    client.copy_object(bucket: bucket_name, key: images.keys.last, copy_source: "#{bucket_name}/#{moved_key}", acl: 'public-read')
    anonymous.call('copy_object', images.keys.last, status: 200, bytes: small)
  end

  # ---- deleting a status's media: AttachmentBatch#remove_files ----
  step.call('delete_objects') do
    keys = images.keys + [video_key, moved_key]
    resp = bucket.delete_objects(delete: { objects: keys.map { |key| { key: key } }, quiet: true })
    check('delete_objects', resp.errors.empty?, "errors: #{resp.errors.map(&:to_h)}")
    soft('delete_objects', resp.deleted.empty?, "Quiet=true, yet #{resp.deleted.size} Deleted entries came back")
    keys.each { |key| check('delete_objects', !bucket.object(key).exists?, "#{key} still exists") }
    again = bucket.delete_objects(delete: { objects: [{ key: video_key }], quiet: false })
    check('delete_objects', again.errors.empty? && again.deleted.map(&:key) == [video_key], "a second delete of a gone key: #{again.to_h}")
    left = client.list_objects_v2(bucket: bucket_name, prefix: prefix)
    check('delete_objects', left.contents.empty?, "left under #{prefix}: #{left.contents.map(&:key)}")
  end

  # ---- flush_deletes: Object#delete of a single key ----
  step.call('delete_object') do
    key = "#{prefix}accounts/avatars/#{id_partition}/original/#{run}.png"
    path = File.join(workdir, 'avatar.png')
    File.binwrite(path, small)
    upload.call(key, path, 'image/png')
    bucket.object(key).delete
    check('delete_object', !bucket.object(key).exists?, 'still exists')
  end

  versions = {
    'aws-sdk-s3' => Aws::S3::GEM_VERSION, 'aws-sdk-core' => Aws::CORE_GEM_VERSION, 'aws-sigv4' => Aws::Sigv4::VERSION,
  }.transform_values(&:to_s)
  puts JSON.generate(
    harness: 's3_mastodon', ok: true, emulates: 'Mastodon (kt-paperclip + config/initializers/paperclip.rb)',
    sdk: versions, ruby: RUBY_VERSION, endpoint: opts['endpoint'], addressing: opts['addressing'],
    force_path_style: force_path_style,
    effective_addressing: WIRE.values.any? { |w| w['host'].start_with?("#{bucket_name}.") } ? 'virtual' : 'path',
    bucket: bucket_name, prefix: prefix, public_base: public_base,
    steps: steps, measured: measured,
    total_ms: ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0) * 1000).round,
    deviations: DEVIATIONS.uniq, wire: WIRE
  )
rescue Failure => e
  warn "FAIL #{e.message}"
  exit 1
rescue StandardError => e
  warn "FAIL uncaught: #{e.class}: #{e.message}\n#{e.backtrace.first(8).join("\n")}"
  exit 1
end
